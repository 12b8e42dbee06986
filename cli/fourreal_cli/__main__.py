"""Allow `python -m fourreal_cli`."""
from .main import main

main()
