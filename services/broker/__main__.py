"""`python -m services.broker` runs the broker service."""

from services.broker.main import main

if __name__ == "__main__":
    main()
