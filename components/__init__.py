"""interestflow components: plain, testable functions and classes (no Prefect imports)."""
