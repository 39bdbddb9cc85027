/*
 * isense SPANK plugin: shared state and the entry points of each context.
 *
 * Jobs submitted with --isense-worker (only the configured service account may)
 * run their tasks in a private mount namespace where the site's data paths are
 * covered by empty read-only tmpfs mounts, with no_new_privs set.
 */
#ifndef ISENSE_H_
#define ISENSE_H_

#include <stdbool.h>
#include <sys/types.h>

#include <slurm/spank.h>

#define ISENSE_MAX_MASKS 32
#define ISENSE_PATH_MAX 4096
#define ISENSE_NAME_MAX 256

/* The plugstack arguments once parsed; filled by isense_args_parse(). */
struct isense_config {
	bool valid;                       /* false: arguments were rejected */
	char service_account[ISENSE_NAME_MAX];
	int n_masks;
	char masks[ISENSE_MAX_MASKS][ISENSE_PATH_MAX];
	char masks_joined[ISENSE_MAX_MASKS * ISENSE_PATH_MAX]; /* "a:b:c" */
};

extern struct isense_config isense_cfg;
extern bool isense_worker_requested;  /* set by the option callback */

/* isense_args.c: parse and validate the plugstack arguments. check_paths
 * asks that every mask exist as a directory (only where masking happens). */
int isense_args_parse(struct isense_config *cfg, int ac, char **av,
		      bool check_paths);

/* The service account's uid; -1 when the user directory does not know it. */
int isense_service_uid(const struct isense_config *cfg, uid_t *uid);

/* isense_client.c: sbatch/salloc/srun side. */
int isense_client_option(int val, const char *optarg, int remote);
int isense_client_post_opt(spank_t sp);

/* isense_stepd.c: slurmstepd side, in each task's child before exec. */
int isense_stepd_task_privileged(spank_t sp);

#endif /* ISENSE_H_ */
