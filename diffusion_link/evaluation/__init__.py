"""Evaluation: modality-gap metrics, reports and figures (captioning metrics come with stage 3)."""
