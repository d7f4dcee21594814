"""Building blocks shared by the methods: the epoch loop, layers, variance propagation, optimisers."""
