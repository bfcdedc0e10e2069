//! Object keys made once per thread. Building a document for every Check would
//! otherwise allocate each key anew; a key shared by all threads would make every
//! Check bump one reference count from every core, and that cache line would bounce.

/// Declares a per-thread table of document keys: `document_keys! { field = "name", ... }`,
/// then `KEYS.with(|k| k.field.clone())`.
macro_rules! document_keys {
    ($($field:ident = $name:literal),* $(,)?) => {
        struct Keys { $($field: $crate::policy::Value),* }

        impl Keys {
            fn new() -> Self {
                Self { $($field: $crate::policy::Value::from($name)),* }
            }
        }

        thread_local! {
            static KEYS: Keys = Keys::new();
        }
    };
}

pub(crate) use document_keys;
