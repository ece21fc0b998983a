//! Pure logic: manifests, snapshots, the dependency graph. No IO here.

pub mod alert;
pub mod dag;
pub mod drift;
pub mod drill;
pub mod duration;
pub mod manifest;
pub mod plan;
pub mod run;
pub mod schedule;
pub mod snapshot;
pub mod source;

/// How many names a message lists before it says "and N more".
pub const LISTED: usize = 10;

/// The first `LISTED` items, comma-separated, then how many more there are:
/// a message about 20,000 services must stay readable ("a, b, c and 19990 more").
pub fn listed<S: AsRef<str>>(items: &[S]) -> String {
    listed_up_to(items, LISTED)
}

fn listed_up_to<S: AsRef<str>>(items: &[S], max: usize) -> String {
    let shown: Vec<&str> = items.iter().take(max).map(AsRef::as_ref).collect();
    match items.len().saturating_sub(max) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_lists_are_cut_with_a_count() {
        assert_eq!(super::listed_up_to(&["a", "b"], 3), "a, b");
        assert_eq!(super::listed_up_to(&["a", "b", "c", "d"], 2), "a, b and 2 more");
        assert_eq!(super::listed_up_to::<&str>(&[], 2), "");
        let many: Vec<String> = (0..25).map(|i| i.to_string()).collect();
        assert!(super::listed(&many).ends_with("9 and 15 more"), "{}", super::listed(&many));
    }
}
