//! thinly-nbd: the NBD protocol core and server.
