//! DNS capture and lookup matching (see issue 5).
