"""The application's model: a plain Django model, nothing in it knows about pg_envelope."""
from django.db import models


class Person(models.Model):
    email = models.CharField(max_length=254, unique=True)
    name = models.CharField(max_length=100)

    def __str__(self) -> str:
        return self.name
