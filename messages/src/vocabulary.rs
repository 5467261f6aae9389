//! How the closed vocabularies (phases, reasons) are declared: a Rust enum whose variant
//! names are the wire strings, so each word is written once. The wire stays a string (Go
//! voiyd's manifests and statuses carry these words), and a word this build does not know
//! is `None` from `parse`, never a panic.

/// Declares a string-valued enum (a variant's wire spelling is its name unless
/// `Variant = "spelling"` says otherwise): `as_str`, `parse`, `ALL`, `Display`, `FromStr`,
/// `From<Self> for String`, and comparisons with `str`/`String` both ways.
macro_rules! string_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident $(= $wire:literal)?),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire spelling.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $crate::vocabulary::wire!($variant $(, $wire)?)),+
                }
            }

            /// The value a wire string names, if this build knows it.
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $(s if s == $crate::vocabulary::wire!($variant $(, $wire)?) => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::parse(s).ok_or_else(|| {
                    let known: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                    format!("unknown {} '{s}' (known: {})", stringify!($name), known.join(", "))
                })
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.as_str().to_string()
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.as_str()
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.as_str()
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                self == other.as_str()
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                self.as_str() == other
            }
        }
    };
}

/// The wire spelling of a variant: its name, or the literal given with `= "..."`.
macro_rules! wire {
    ($variant:ident) => {
        stringify!($variant)
    };
    ($variant:ident, $wire:literal) => {
        $wire
    };
}

pub(crate) use string_enum;
pub(crate) use wire;
