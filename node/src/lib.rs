//! voiyd-node library.
