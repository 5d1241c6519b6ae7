"""Report: the plot style, figures, provenance and the HTML + PDF report."""
