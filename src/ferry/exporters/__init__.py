"""Export a ferry package to other runtimes: `lite` (ferry's numpy engine)."""
