"""The ground floor: cameras, rigid transforms, rays and head angles. Every stage imports it; it imports no stage."""
