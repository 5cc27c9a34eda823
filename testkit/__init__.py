"""What the tests and the benchmarks share: sample slices, fault injection, the bad-input catalogue."""
