//! Building input documents: regorus values made cheaply on every Check. A leaf:
//! the request view, tokens, context and policy input all build on it, and it builds
//! on nothing of leash's.
//!
//! Object keys are made once per thread. Building a document for every Check would
//! otherwise allocate each key anew; a key shared by all threads would make every
//! Check bump one reference count from every core, and that cache line would bounce.

/// Declares a per-thread table of document keys: `document_keys! { field = "name", ... }`,
/// then `KEYS.with(|k| k.field.clone())`.
macro_rules! document_keys {
    ($($field:ident = $name:literal),* $(,)?) => {
        struct Keys { $($field: ::regorus::Value),* }

        impl Keys {
            fn new() -> Self {
                Self { $($field: ::regorus::Value::from($name)),* }
            }
        }

        thread_local! {
            static KEYS: Keys = Keys::new();
        }
    };
}

pub(crate) use document_keys;

/// Builds an object from entries; later keys win, as in a JSON document.
pub(crate) fn object(
    entries: impl IntoIterator<Item = (regorus::Value, regorus::Value)>,
) -> regorus::Value {
    let mut object = regorus::value::Object::new();
    for (key, value) in entries {
        object.insert(key, value);
    }
    object.into_value()
}
