"""The run's report page: one self-contained HTML file built from what the stages wrote (:mod:`.page`)."""

from diffusion_link.report.page import build_report, caption_table_rows, collect, mark_novel, read_system

__all__ = ["build_report", "caption_table_rows", "collect", "mark_novel", "read_system"]
