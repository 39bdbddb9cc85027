"""The controller side of `isense serve`: what the daemon receives from the node hooks
(events) and how it turns them into reclaim records (reclaims)."""
