"""The networks: architectures by name (`zoo`) and a network with its preprocessing, loaded
from a bundle (`classifier`)."""
