/*
 * A mosquitto 2.0 plugin: a client id belongs to its user.
 *
 * A client may connect only with its user name as client id, or the user name followed by a
 * '.' and anything ("operator.cli-1f3a"). So nobody but the service's user can present the
 * service's client id (which would end the service's connection and take its persistent
 * session and its messages), and each user may still hold several connections at once.
 * User names have no '.' (att_jm/site/users.py), so the part before the first '.' names
 * exactly one user. Passwords are then checked by the broker's password_file as usual: the
 * plugin only defers (or refuses) and never grants anything.
 *
 * Built by `att-jm setup` against Debian's mosquitto-dev headers:
 *   cc -shared -fPIC -O2 -o att_jm_clientid.so clientid.c
 */
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

static mosquitto_plugin_id_t *plugin_id = NULL;

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	(void)supported_version_count;
	(void)supported_versions;
	return 5;
}

static int basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *data = event_data;
	const char *id = mosquitto_client_id(data->client);
	const char *user = data->username;
	size_t length;

	(void)event;
	(void)userdata;
	if(user == NULL){
		return MOSQ_ERR_PLUGIN_DEFER; /* anonymous: allow_anonymous decides (false) */
	}
	if(id != NULL){
		length = strlen(user);
		if(strncmp(id, user, length) == 0 && (id[length] == '\0' || id[length] == '.')){
			return MOSQ_ERR_PLUGIN_DEFER; /* the password file decides */
		}
	}
	mosquitto_log_printf(MOSQ_LOG_NOTICE,
			"att-jm: refused client id '%s' for user '%s' (it must be the user name, "
			"or the user name and '.')", id != NULL ? id : "", user);
	return MOSQ_ERR_AUTH;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	plugin_id = identifier;
	return mosquitto_callback_register(plugin_id, MOSQ_EVT_BASIC_AUTH, basic_auth, NULL, NULL);
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	return mosquitto_callback_unregister(plugin_id, MOSQ_EVT_BASIC_AUTH, basic_auth, NULL);
}
