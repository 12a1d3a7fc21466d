"""The leader lease: quorum-granted, fencing-token-protected, renewed or lost."""
