"""Datasets held in the safe-room: declared schemas, validated streaming uploads, encryption at rest."""
