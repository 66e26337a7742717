"""Load generation and side-by-side comparisons: how users load-test zeroembed."""
