"""Instructor-only: the class of honest and copied submissions that measures course/similarity.py (build.py)."""
