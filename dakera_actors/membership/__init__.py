"""SWIM membership with Lifeguard: a pure core (core.py) inside its actor (actor.py)."""
