"""The run's report page: one self-contained HTML file built from what the stages wrote (:mod:`.page`)."""

from diffusion_link.report.page import build_report, collect, mark_novel

__all__ = ["build_report", "collect", "mark_novel"]
