"""Prefect 3 flows: the order of the stages, schedules, triggers and deployments.

All logic lives in the library (src/visionloop); tasks/ wraps it, and these flows only
decide order and what the Prefect UI shows.
"""
