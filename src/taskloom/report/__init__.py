"""The HTML report of a run directory: ``write_report(run_dir)`` writes RUN_DIR/report.html."""
from taskloom.report.html import render_report, write_report
from taskloom.report.rundir import RunData, load_run

__all__ = ["RunData", "load_run", "render_report", "write_report"]
