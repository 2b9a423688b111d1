//! What happens to a recorded response body on its way to the client: the
//! tee that hands every frame to the recorder without making the client
//! wait, and that keeps reading the upstream when the client leaves.

pub mod tee;

pub use tee::{End, Recording, Tap, TeeBody, tap};
