/*
 * Plugstack arguments:
 *   service_account=NAME        the only user allowed to use --isense-worker
 *   mask=/ABS[:/ABS...]         directories hidden from worker jobs (repeatable)
 * Any error is logged as one line naming the argument, and the config is
 * marked invalid. The account is looked up when used, not here: a slow or
 * absent user directory at boot must not stop slurmd.
 */
#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "isense.h"

#define USAGE "expected service_account=NAME and mask=/ABS/DIR[:/ABS/DIR...]"

static int has_dotdot(const char *path)
{
	const char *p = path;

	while ((p = strstr(p, "..")) != NULL) {
		bool starts = (p == path || p[-1] == '/');
		bool ends = (p[2] == '\0' || p[2] == '/');
		if (starts && ends)
			return 1;
		p += 2;
	}
	return 0;
}

/* Check one mask path and append it (resolved when it must exist). */
static int add_mask(struct isense_config *cfg, const char *path,
		    bool check_paths)
{
	char resolved[PATH_MAX];
	struct stat st;
	const char *keep = path;

	if (path[0] != '/') {
		slurm_error("isense: plugstack mask path '%s' is not absolute",
			    path);
		return -1;
	}
	if (strcmp(path, "/") == 0 || has_dotdot(path)) {
		slurm_error("isense: plugstack mask path '%s' must be a directory "
			    "below / without '..'", path);
		return -1;
	}
	if (check_paths) {
		if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode)) {
			slurm_error("isense: plugstack mask path '%s' is not an "
				    "existing directory on this node", path);
			return -1;
		}
		/* Mount where the kernel will look: symlinks resolved. */
		if (!realpath(path, resolved)) {
			slurm_error("isense: plugstack mask path '%s' cannot be "
				    "resolved: %s", path, strerror(errno));
			return -1;
		}
		keep = resolved;
	}
	if (cfg->n_masks >= ISENSE_MAX_MASKS) {
		slurm_error("isense: plugstack has more than %d mask paths",
			    ISENSE_MAX_MASKS);
		return -1;
	}
	if (strlen(keep) >= ISENSE_PATH_MAX) {
		slurm_error("isense: plugstack mask path '%.64s...' is too long",
			    path);
		return -1;
	}
	strcpy(cfg->masks[cfg->n_masks++], keep);
	if (cfg->masks_joined[0])
		strcat(cfg->masks_joined, ":");
	strcat(cfg->masks_joined, keep);
	return 0;
}

static int parse_masks(struct isense_config *cfg, const char *value,
		       bool check_paths)
{
	char *copy, *save = NULL, *tok;
	int rc = 0;

	if (!value[0]) {
		slurm_error("isense: plugstack argument 'mask=' is empty; "
			    USAGE);
		return -1;
	}
	if (!(copy = strdup(value))) {
		slurm_error("isense: out of memory parsing plugstack arguments");
		return -1;
	}
	for (tok = strtok_r(copy, ":", &save); tok && rc == 0;
	     tok = strtok_r(NULL, ":", &save))
		rc = add_mask(cfg, tok, check_paths);
	free(copy);
	return rc;
}

int isense_args_parse(struct isense_config *cfg, int ac, char **av,
		      bool check_paths)
{
	int i;

	memset(cfg, 0, sizeof(*cfg));
	for (i = 0; i < ac; i++) {
		const char *arg = av[i];

		if (strncmp(arg, "service_account=", 16) == 0) {
			const char *name = arg + 16;
			if (!name[0] || strlen(name) >= ISENSE_NAME_MAX) {
				slurm_error("isense: plugstack argument '%s' "
					    "needs a user name", arg);
				return -1;
			}
			strcpy(cfg->service_account, name);
		} else if (strncmp(arg, "mask=", 5) == 0) {
			if (parse_masks(cfg, arg + 5, check_paths) < 0)
				return -1;
		} else {
			slurm_error("isense: unknown plugstack argument '%s'; "
				    USAGE, arg);
			return -1;
		}
	}
	if (!cfg->service_account[0]) {
		slurm_error("isense: plugstack argument service_account= is "
			    "missing; " USAGE);
		return -1;
	}
	if (cfg->n_masks == 0) {
		slurm_error("isense: plugstack argument mask= is missing; "
			    USAGE);
		return -1;
	}
	cfg->valid = true;
	return 0;
}

int isense_service_uid(const struct isense_config *cfg, uid_t *uid)
{
	struct passwd *pw = getpwnam(cfg->service_account);

	if (!pw)
		return -1;
	*uid = pw->pw_uid;
	return 0;
}
