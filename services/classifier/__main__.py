"""`python -m services.classifier`: run one classifier replica."""

from services.classifier.main import main

if __name__ == "__main__":
    main()
