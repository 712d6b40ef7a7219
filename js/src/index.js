// flask-impulse: the browser client and the push client of a flask-impulse service.
export { createRealtimeClient, RealtimeError } from './realtime.js'
export { createServerClient, ServerClientError, RETRIED_STATUSES } from './server.js'
