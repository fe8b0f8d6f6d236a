"""`python -m services.cache`: run one cache replica."""

from services.cache.main import main

if __name__ == "__main__":
    main()
