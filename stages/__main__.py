"""``python -m stages COMMAND …`` is ``zivsync COMMAND …``: how zivsync run starts its stages."""

from .umbrella import main

if __name__ == "__main__":
    main()
