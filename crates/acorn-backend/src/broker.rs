//! Runs a mosquitto broker configured like an AWS IoT policy (work in progress).
