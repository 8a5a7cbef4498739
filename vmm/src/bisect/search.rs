//! The search itself, pure: which commit to test next, and what the
//! outcomes so far say. A linear history of `n` candidates (the commits
//! after `--old` up to `--new`, oldest first; the last is `--new`, new by
//! the user's word); the first new commit is one of them. Binary search
//! takes about log2(n) steps; a skipped commit is replaced by the
//! untested one nearest the middle, and when only skipped commits are
//! left between the last old and the first new one, the answer is that
//! set (as `git bisect` says "only skipped commits left to test").

use std::collections::BTreeSet;

/// What a tested commit turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Old,
    New,
    Skip,
}

/// Where the first new commit can still be.
#[derive(Debug, Clone)]
pub struct Search {
    /// The last commit known old (`None`: `--old` itself, before index 0).
    lo: Option<usize>,
    /// The first commit known new.
    hi: usize,
    skipped: BTreeSet<usize>,
}

/// The search's answer once nothing is left to test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The first new commit.
    First(usize),
    /// One of these is (skipped commits, then the first known new one).
    Among(Vec<usize>),
}

impl Search {
    /// A search over `n >= 1` candidates.
    pub fn new(n: usize) -> Self {
        assert!(n >= 1, "a bisection needs a commit after --old");
        Search {
            lo: None,
            hi: n - 1,
            skipped: BTreeSet::new(),
        }
    }

    fn open(&self) -> std::ops::Range<usize> {
        self.lo.map_or(0, |l| l + 1)..self.hi
    }

    /// The next commit to test, or None when the answer is known.
    pub fn next(&self) -> Option<usize> {
        let r = self.open();
        // The middle of the interval of possible answers (r.start..=hi).
        let mid = r.start + (self.hi - r.start) / 2;
        r.filter(|i| !self.skipped.contains(i))
            .min_by_key(|&i| (i.abs_diff(mid), i))
    }

    pub fn record(&mut self, i: usize, o: Outcome) {
        if !self.open().contains(&i) {
            return; // outside what is still open: says nothing new
        }
        match o {
            Outcome::Old => self.lo = Some(i),
            Outcome::New => self.hi = i,
            Outcome::Skip => {
                self.skipped.insert(i);
            }
        }
    }

    /// The answer, once [`Search::next`] is None.
    pub fn answer(&self) -> Answer {
        let mut among: Vec<usize> = self.open().filter(|i| self.skipped.contains(i)).collect();
        if among.is_empty() {
            return Answer::First(self.hi);
        }
        among.push(self.hi);
        Answer::Among(among)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bisect `n` commits whose first new one is `first`, skipping those
    /// in `skip`; returns the answer and the number of tests.
    fn bisect(n: usize, first: usize, skip: &[usize]) -> (Answer, usize) {
        let mut s = Search::new(n);
        let mut steps = 0;
        while let Some(i) = s.next() {
            steps += 1;
            let o = if skip.contains(&i) {
                Outcome::Skip
            } else if i >= first {
                Outcome::New
            } else {
                Outcome::Old
            };
            s.record(i, o);
            assert!(steps <= n, "no progress");
        }
        (s.answer(), steps)
    }

    #[test]
    fn sixteen_commits_take_four_steps() {
        for first in 0..16 {
            let (a, steps) = bisect(16, first, &[]);
            assert_eq!(a, Answer::First(first));
            assert!(steps <= 4, "first {first}: {steps} steps");
        }
    }

    #[test]
    fn the_new_end_alone_needs_no_step() {
        assert_eq!(bisect(1, 0, &[]), (Answer::First(0), 0));
    }

    #[test]
    fn skips_around_the_answer_leave_a_set() {
        let (a, _) = bisect(16, 7, &[6]);
        assert_eq!(a, Answer::Among(vec![6, 7]));
        let (a, _) = bisect(16, 7, &[7]);
        assert_eq!(a, Answer::Among(vec![7, 8]));
        // A skip away from the answer costs a step, not the answer.
        assert_eq!(bisect(16, 3, &[7]).0, Answer::First(3));
    }

    proptest! {
        /// Without skips: the right commit in at most ceil(log2 n) steps.
        /// With skips: the answer is right or a set containing it.
        #[test]
        fn finds_the_first_new_commit(n in 1usize..300, f in 0usize..300, skips in proptest::collection::vec(0usize..300, 0..6)) {
            let first = f % n;
            let (a, steps) = bisect(n, first, &[]);
            prop_assert_eq!(a, Answer::First(first));
            let bound = (usize::BITS - (n - 1).leading_zeros()) as usize; // ceil(log2 n)
            prop_assert!(steps <= bound, "{} steps for {}", steps, n);
            let skip: Vec<usize> = skips.into_iter().map(|s| s % n).filter(|&s| s != n - 1).collect();
            match bisect(n, first, &skip).0 {
                Answer::First(i) => prop_assert_eq!(i, first),
                Answer::Among(v) => prop_assert!(v.contains(&first), "{:?} lacks {}", v, first),
            }
        }
    }
}
