export * from './realtime.js'
export * from './server.js'
