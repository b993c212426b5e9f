#!/bin/sh
# {{ header }}
# shutdown hook (sourced by dracut's shutdown after the root is unmounted): the links were kept up until now
# (need_shutdown); make sure nothing the AoE disk holds is left unwritten before power off.

sync
