//! What `to`, `except`, `join` and the other room operations accept: one room
//! name, a socket id (its own room), or several.

use crate::adapter::SocketId;

/// One room or several.
pub trait IntoRooms {
    /// The room names.
    fn into_rooms(self) -> Vec<String>;
}

impl IntoRooms for &str {
    fn into_rooms(self) -> Vec<String> {
        vec![self.to_string()]
    }
}

impl IntoRooms for String {
    fn into_rooms(self) -> Vec<String> {
        vec![self]
    }
}

impl IntoRooms for &String {
    fn into_rooms(self) -> Vec<String> {
        vec![self.clone()]
    }
}

impl IntoRooms for SocketId {
    fn into_rooms(self) -> Vec<String> {
        vec![self.to_string()]
    }
}

impl IntoRooms for Vec<String> {
    fn into_rooms(self) -> Vec<String> {
        self
    }
}

impl IntoRooms for &[String] {
    fn into_rooms(self) -> Vec<String> {
        self.to_vec()
    }
}

impl IntoRooms for &[&str] {
    fn into_rooms(self) -> Vec<String> {
        self.iter().map(|s| s.to_string()).collect()
    }
}

impl<const N: usize> IntoRooms for [&str; N] {
    fn into_rooms(self) -> Vec<String> {
        self.iter().map(|s| s.to_string()).collect()
    }
}
