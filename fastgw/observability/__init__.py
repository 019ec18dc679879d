"""What the gateway tells about itself: counters, metric families and their text, the stats
snapshot the admin API and the prometheus plugin read, rate-limited log lines."""
