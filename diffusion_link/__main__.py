"""``python -m diffusion_link ...`` is the ``diffusion-link`` command (the runner starts each step this way)."""

from diffusion_link.cli import main

if __name__ == "__main__":
    main()
