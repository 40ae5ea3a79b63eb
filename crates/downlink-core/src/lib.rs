//! Sans-IO core of Downlink.
