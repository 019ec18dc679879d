"""The proxy: routing (Kong 3's priority), dispatch, the per-route plugin chain, forwarding
(target choice, retries, passive health) and the runtime a reload swaps. No sockets here: the
wire (fastgw.http) does the I/O."""
