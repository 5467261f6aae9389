//! voiydctl library.
