"""Run reports: results.json and the verdict table."""
