"""Tables, figures and the HTML report of a run."""

from preadapt.report.html import write_report
from preadapt.report.tables import summary_table

__all__ = ["write_report", "summary_table"]
