"""Reenactment: driver tracking transferred onto the avatar."""
