//! Console-report classifier.
