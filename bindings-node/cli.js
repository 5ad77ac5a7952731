#!/usr/bin/env node
// `npx remote-access`: the remote-access command line (`remote-access --help`), the same
// commands as `cargo install remote-access-cli` gives, run by this package's native addon.
'use strict'

const { cliMain } = require('./index.js')

process.exitCode = cliMain(process.argv.slice(2))
