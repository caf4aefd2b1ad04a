"""The run's report page: one self-contained HTML file built from what the stages wrote (:mod:`.page`)."""

from diffusion_link.report.page import build_report, collect, mark_novel, read_system
from diffusion_link.report.tables import caption_table_rows, paired_difference

__all__ = ["build_report", "caption_table_rows", "collect", "mark_novel", "paired_difference", "read_system"]
