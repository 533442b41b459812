//! Root package of the thinly workspace: integration tests and benches live here.
