//! Guest-kernel symbols and breakpoint sites.
