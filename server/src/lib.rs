//! voiyd-server library.
