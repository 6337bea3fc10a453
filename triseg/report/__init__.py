"""Visual reports: matplotlib figures (headless) and one self-contained HTML page per search result."""
