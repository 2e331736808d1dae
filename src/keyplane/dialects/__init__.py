"""Wire dialects: thin translations between an exchange's wire form and the service."""
