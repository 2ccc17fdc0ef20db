"""``python -m stages COMMAND …`` is ``zivsync COMMAND …``: how zivsync run starts its stages."""

from .umbrella import main

main()
